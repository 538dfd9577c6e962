"""A local AWS Signer API emulator that speaks the REST-JSON wire protocol boto3 uses.

Point an unmodified boto3 ``signer`` client at ``EmulatorServer(world).start().url`` and
drive ``world`` from the test to create, finish, revoke and age out signing jobs.
"""

from signer_sync.emulator.api import ApiError, TokenCodec
from signer_sync.emulator.server import EmulatorServer, Faults
from signer_sync.emulator.world import (
    PLATFORMS,
    RETENTION,
    Job,
    JobFilter,
    Profile,
    World,
    epoch_seconds,
    signature_expiry,
)

__all__ = [
    "PLATFORMS",
    "RETENTION",
    "ApiError",
    "EmulatorServer",
    "Faults",
    "Job",
    "JobFilter",
    "Profile",
    "TokenCodec",
    "World",
    "epoch_seconds",
    "signature_expiry",
]
