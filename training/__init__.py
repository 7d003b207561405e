"""Models, evaluation and MLflow registry (grows with the training issue)."""
