"""What draws: the data figures, the evaluation figures and the study's report."""
