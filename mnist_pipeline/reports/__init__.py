"""Run folders and what goes in them: the folder, its file names and writes (`run_folder`), reading its files
back checked (`run_reader`), figures (`plots`), a run's report (`document`, rendered by `sections`) and the
comparison of runs (`compare`). No TensorFlow here."""
