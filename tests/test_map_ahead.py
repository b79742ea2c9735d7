"""pipeline.map_ahead: the one read-ahead loop (decoding ahead of the model, a batch prepared ahead)."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from fakescope.pipeline import map_ahead


@pytest.mark.parametrize("workers", [1, 3])
def test_results_in_input_order_and_never_more_than_ahead_started(workers):
    started, lock = [], threading.Lock()

    def fn(x):
        with lock:
            started.append(x)
        return x * x

    got = []
    for i, r in enumerate(map_ahead(fn, range(20), ahead=4, workers=workers)):
        with lock:
            assert len(started) <= i + 1 + 4  # what it has started beyond what was consumed is bounded
        got.append(r)
    assert got == [x * x for x in range(20)]


def test_the_next_input_is_prepared_while_the_consumer_works_on_this_one():
    second_started = threading.Event()

    def prepare(x):
        if x == 1:
            second_started.set()
        return x

    with ThreadPoolExecutor(1) as pool:
        it = map_ahead(prepare, [0, 1, 2], ahead=1, pool=pool)
        assert next(it) == 0
        assert second_started.wait(5)  # input 1 runs before the consumer asks for it
        assert list(it) == [1, 2]
