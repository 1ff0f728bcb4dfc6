"""frugalserve: one OpenAI-compatible endpoint in front of model backends that cost nothing while idle."""

__version__ = "0.1.0"
