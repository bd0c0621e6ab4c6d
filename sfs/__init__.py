"""sfs: end-to-end-encrypted peer-to-peer file transfer over WebRTC."""

import logging

__version__ = "0.1.0"

logging.getLogger("sfs").addHandler(logging.NullHandler())
