"""Where checkpoints come from: trained here (the demo), or a local folder of files."""
