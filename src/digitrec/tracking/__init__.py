"""What a run leaves behind: its record (metrics.json), TensorBoard and MLflow logging, figures."""
