"""`python -m layerskip.eval ARGS`: lm-eval's own CLI with the `layerskip` model registered.

lm-eval 0.4.13 finds models only in its own source tree; later releases also read the
`lm_eval.models` entry point in our pyproject, so that plain `lm_eval --model layerskip` works.
"""

from lm_eval.__main__ import cli_evaluate

import layerskip.eval.lm  # noqa: F401  registers the model

cli_evaluate()
