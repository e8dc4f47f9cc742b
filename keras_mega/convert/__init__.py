"""Reading Hugging Face Mega checkpoints."""
