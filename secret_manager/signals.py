"""What the vault tells the layers above it, which it never imports."""

from django.dispatch import Signal

# Sent with ``event`` (the SecretAuditEvent just written) and ``user`` (who asked, or
# None), inside the transaction that wrote it; control_unit.audit copies it into the
# general audit log.
secret_audited = Signal()
