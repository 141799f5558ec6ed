"""MDM: the Multi-modal Diffusion Mamba (arXiv 2510.13253) and its bidirectional relative DiM.

Importing the package has no side effects; see ``mdm.cli`` for the command line.
"""

__version__ = "0.1.0"
