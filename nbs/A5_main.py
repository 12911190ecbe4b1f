# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: `python -m deepcluster_nb`
# > The package's `__main__` module: what Python runs for `python -m deepcluster_nb` (and `torchrun -m deepcluster_nb`). It hands the command line to `deepcluster_nb.cli.main`.

# %%
#| default_exp __main__

# %% [markdown]
# For `python -m PACKAGE`, Python runs the module `PACKAGE.__main__` with `__name__` set to `"__main__"`. Ours only
# calls `main` of the command-line appendix and exits with its status. The exported cell is not run in this notebook
# (`eval: false`): inside a notebook `__name__` is `"__main__"` too, and the kernel's own arguments would be parsed as
# a command line.

# %%
#| export
#| eval: false
import sys
from deepcluster_nb.cli import main
if __name__ == "__main__": sys.exit(main())

# %% [markdown]
# Imported under its own name, the module runs nothing and exposes the command line's `main`:

# %%
import importlib
from fastcore.test import test_eq
import deepcluster_nb.cli

# %%
test_eq(importlib.import_module("deepcluster_nb.__main__").main, deepcluster_nb.cli.main)

# %%
#| hide
import nbdev; nbdev.nbdev_export()
