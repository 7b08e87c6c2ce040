"""Reading a gauge out of a model server's Prometheus text, which no one vouches for."""

from __future__ import annotations

import pytest

from ext_proc.server.load_signals import gauge_sum

PAGE = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama 3"} 3.0
vllm:num_requests_waiting{engine="1",model_name="llama}3"} 4.0 1712345678000
vllm:num_requests_waiting_total 99
vllm:num_requests_running{engine="0"} 8.0
"""


def test_the_samples_of_the_metric_are_summed_and_its_lookalikes_left_out() -> None:
    assert gauge_sum(PAGE, "vllm:num_requests_waiting") == 7.0
    assert gauge_sum(PAGE, "vllm:num_requests_running") == 8.0
    assert gauge_sum("demo_model_queue_depth 12\n", "demo_model_queue_depth") == 12.0
    assert gauge_sum("demo_model_queue_depth 12", "demo_model_queue_depth") == 12.0  # no newline at the end
    page = 'demo_model_queue_depth{h="a"} 1\nx 2\ndemo_model_queue_depth{h="b"} 2\ndemo_model_queue_depth_x 9'
    assert gauge_sum(page, "demo_model_queue_depth") == 3.0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# demo_model_queue_depth 5\n",
        "demo_model_queue_depth NaN\n",
        "demo_model_queue_depth +Inf\n",
        'demo_model_queue_depth{host="a" 5\n',
        "demo_model_queue_depth five\n",
        "demo_model_queue_depth\n",
        "demo_model_queue_depth_other 5\n",
    ],
)
def test_anything_else_is_no_figure(text: str) -> None:
    assert gauge_sum(text, "demo_model_queue_depth") is None
