"""HTTP surfaces: the OpenAI data plane, probes, and (later) the admin plane."""
