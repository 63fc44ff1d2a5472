"""FlowKit node SDK and NPU runtime.

This package is copied into the NPU image and runs inside the sandbox. It uses the
standard library only and holds no server code: it must be safe to hand to anyone.
"""

PROTOCOL_VERSION = 2
