"""The data plane's HTTP surface: the OpenAI routes, probes, error rendering, and the
watch for clients that hang up."""
