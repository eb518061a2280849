import pytest

from layerskip.generation.config import GenerationConfig
from layerskip.serve.config import ServerConfig
from layerskip.serve.errors import APIError
from layerskip.serve.limits import max_new_tokens

CFG = ServerConfig(max_prompt_tokens=100, max_tokens=50, generation=GenerationConfig(max_new_tokens=40))


def test_an_asked_max_tokens_within_every_limit_is_kept():
    assert max_new_tokens(10, 50, CFG, context=512, param="prompt") == 50


def test_the_default_is_cut_to_the_room_left_in_the_context():
    assert max_new_tokens(10, None, CFG, context=512, param="prompt") == 40
    assert max_new_tokens(90, None, CFG, context=100, param="prompt") == 9  # 100 - 90 - 1


@pytest.mark.parametrize(("prompt", "asked", "context", "param", "code"), [
    (101, None, 512, "prompt", "context_length_exceeded"),  # over --max-prompt-tokens
    (99, None, 100, "prompt", "context_length_exceeded"),  # no room left to generate
    (10, 51, 512, "max_tokens", None),  # over --max-tokens-limit
    (60, 50, 100, "max_tokens", "context_length_exceeded"),  # prompt + max_tokens past the context
])
def test_each_limit_is_a_400_naming_it(prompt, asked, context, param, code):
    with pytest.raises(APIError) as e:
        max_new_tokens(prompt, asked, CFG, context=context, param="prompt")
    assert (e.value.status, e.value.param, e.value.code) == (400, param, code)
