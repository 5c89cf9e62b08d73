"""lora-gateway: an OpenAI-compatible gateway in front of multi-LoRA TGI pools."""

__version__ = "0.1.0"
