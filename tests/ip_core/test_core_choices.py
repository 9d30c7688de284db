"""Every choice input (crop, combine, tiles, weight_type, noise, timing, ...) refuses an unknown value the same way:
naming the input, the value and the choices (a workflow edited by hand, or saved by another version)."""
import pytest

from ip_core.errors import IPAdapterError, check_choice
from ip_core.frames import frame_schedule
from ip_core.noise import make_noise
from ip_core.preprocess import preprocess_images
from ip_core.weight_types import check_weight_type


def test_a_known_value_passes_and_an_unknown_one_names_the_choices():
    assert check_choice("pad", "crop mode", ("center", "pad")) == "pad"
    with pytest.raises(IPAdapterError, match=r"^unknown crop mode 'zoom'; use one of center, pad\.$"):
        check_choice("zoom", "crop mode", ("center", "pad"))
    with pytest.raises(KeyError):
        check_choice(3, "number", (1, 2), KeyError)


@pytest.mark.parametrize("call, message", [
    (lambda: check_weight_type("sideways"), "unknown weight_type 'sideways'; use one of linear"),
    (lambda: make_noise("purple", 0.5, 0), "unknown noise type 'purple'; use one of fade, dissolve, gaussian, shuffle."),
    (lambda: frame_schedule(timing="wobbly"), "unknown timing 'wobbly'; use one of "),
    (lambda: preprocess_images(None, mode="zoom"), "unknown crop mode 'zoom'; use one of "),
])
def test_the_pack_refuses_unknown_choices_through_it(call, message):
    with pytest.raises(IPAdapterError) as e:
        call()
    assert str(e.value).startswith(message)
