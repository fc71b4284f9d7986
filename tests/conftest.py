"""Test-session settings: one intra-op thread (tiny models run faster without thread hand-offs on 2 cores), and the
hypothesis profiles.

Property tests (``@given``) run under one of two profiles, loaded here, before any test module is imported (a
test's own ``@settings(...)`` takes the values it does not set from the profile loaded when it is decorated):

* ``ci``, when the ``CI`` environment variable is set (to anything but ``""``, ``0``, ``false`` or ``no``): a
  fixed, derandomized set of examples (the seed is a hash of each test), no example database, no deadline. The same
  code and the same pytest command run the same examples on every machine and every run, so a property test is a
  regression test in CI, not a coin flip; a failure prints the ``@reproduce_failure`` blob. (Hypothesis also mixes
  in constants it finds in the project's imported modules, so one test file run alone may draw a few examples
  other than the full suite does.)
* ``explore`` otherwise: random examples on each run and the local ``.hypothesis/`` database (which replays a
  failure until it is fixed), no deadline.

Either can be chosen explicitly with ``pytest --hypothesis-profile ci`` / ``explore``. Every example that has ever
failed is pinned with ``@example(...)`` on its test, so both profiles run it.
"""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

# Examples per property test where the test does not set its own max_examples (hypothesis' default, made explicit).
_MAX_EXAMPLES = 100

# Both profiles build on hypothesis' own defaults, not on whatever profile is loaded at this point: hypothesis loads
# its built-in "ci" profile by itself when it sees CI variables (even CI=false), and a profile registered without a
# parent would inherit its settings.
_DEFAULTS = settings.get_profile("default")

settings.register_profile(
    "ci",
    _DEFAULTS,
    derandomize=True,
    database=None,
    max_examples=_MAX_EXAMPLES,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", _DEFAULTS, max_examples=_MAX_EXAMPLES, deadline=None)


def _in_ci() -> bool:
    """Whether the ``CI`` environment variable asks for CI behaviour (CI services set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


settings.load_profile("ci" if _in_ci() else "explore")
