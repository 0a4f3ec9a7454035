"""iprox-ray: gradient-influence data selection for LLM fine-tuning at cluster scale."""

__version__ = "0.1.0"
