"""dcgan: an executable replication of Radford, Metz & Chintala (2015), arXiv:1511.06434."""

__version__ = "0.1.0"
