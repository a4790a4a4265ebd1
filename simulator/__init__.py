"""Fleet simulator: many simulated nodes, each running the collector's real code.

Only the GPUs (the fake NVML) and the clock are simulated. Sampling, attribution,
aggregation, spooling and sending are the collector's own; a scenario file says what the
GPUs do and when.
"""
