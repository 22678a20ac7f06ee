# SPDX-License-Identifier: Apache-2.0
"""Python helpers of the meta-mbl layer, shared by its recipes and classes
(through `addpylib` in conf/layer.conf) and by the project's shipping tests,
which import them without BitBake: nothing here imports bb."""

# Modules BitBake imports for the recipes (and tracks in task signatures).
BBIMPORTS = ["layout", "boot", "bundle"]
