"""edgekit: compress a model for edge devices, measure each build on the device, deploy the best."""

__version__ = "0.1.0"
