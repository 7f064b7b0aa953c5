"""The stand-in's ``torchvision.transforms``: only there to be imported (see ``__init__.py``)."""
