"""What makes a CPU fast: the precision and layout probe, the activation arena and the allocator
settings, prepacked bf16 weights and the compile fallback. Called by training and forecasting,
never by models."""
