"""distill-ray: distill what large language models can do into small models, on Ray."""

__version__ = "0.1.0"
