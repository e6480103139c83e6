"""`mnist serve`: a completed run behind a draw-a-digit page and an HTTP API (FastAPI on uvicorn).

engines (what computes the answers: ONNX in onnxruntime, or Keras) -> inputs (request bodies to prepared
images, as `mnist predict` prepares files) -> app (the routes, limits and errors); cli/serve.py listens.
"""
