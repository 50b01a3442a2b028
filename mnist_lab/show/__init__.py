"""What a run shows while and after it trains: TensorBoard summaries and their images, the
progress line and the end-of-run table."""
