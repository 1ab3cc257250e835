"""The public API: every exported name resolves, exports load on first use, ``pylon.pay`` stays the function."""

from __future__ import annotations

import inspect
import subprocess
import sys

import dspy_pylon as pylon


def test_every_exported_name_resolves_and_is_documented() -> None:
    for name in pylon.__all__:
        value = getattr(pylon, name)
        if inspect.isfunction(value) or inspect.isclass(value):
            assert value.__doc__, f"{name} has no docstring"
    assert set(pylon.__all__) <= set(dir(pylon))


def test_pay_is_the_function_even_after_the_pay_subpackage_loads() -> None:
    import dspy_pylon.pay.billing
    import dspy_pylon.pay.dev_wallet  # noqa: F401

    assert callable(pylon.pay) and pylon.pay.__module__ == "dspy_pylon"


def test_importing_the_package_or_the_cli_does_not_import_dspy() -> None:
    code = (
        "import sys, dspy_pylon, dspy_pylon.cli, dspy_pylon.identity, dspy_pylon.pay.budget_file; "
        "from dspy_pylon.plain_errors import PylonError; "
        "print('dspy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_errors_are_one_hierarchy_across_both_modules() -> None:
    from dspy_pylon import errors, plain_errors

    for name in plain_errors.__all__:
        assert getattr(errors, name) is getattr(plain_errors, name) is getattr(pylon, name)
    assert issubclass(pylon.BackendTimeout, pylon.PylonError) and issubclass(pylon.IdentityMissing, pylon.ConfigError)
