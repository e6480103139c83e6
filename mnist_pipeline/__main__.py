"""`python -m mnist_pipeline` is the same as the `mnist` command."""

from mnist_pipeline.cli import main

main()
