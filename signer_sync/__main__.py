"""``python -m signer_sync``."""

from signer_sync.cli import main

main()
