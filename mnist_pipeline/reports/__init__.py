"""Run folders and what goes in them: files (`run_folder`) and figures (`plots`). No TensorFlow here."""
