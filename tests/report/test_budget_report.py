"""The INT8 section of the report: every recipe with its top-1 and time, the layers kept in higher precision with
their measured effect, and the paired comparison with FP32."""

from edgepipe.report.markdown import render
from edgepipe.results import SCHEMA, Results

ATTEMPTS = [
    {
        "attempt": 1,
        "recipe": "TFLite converter, min/max",
        "top1": 0.80,
        "drop_pp": 3.0,
        "within_budget": False,
        "seconds": 12.5,
        "lost": 5,
        "gained": 2,
        "mcnemar_p": 0.45,
    },
    {
        "attempt": 2,
        "recipe": "fewest ops kept in float",
        "top1": 0.825,
        "drop_pp": 0.5,
        "within_budget": True,
        "seconds": 80.1,
        "lost": 2,
        "gained": 2,
        "mcnemar_p": 1.0,
        "kept_float": ["block_3_depthwise"],
        "sensitivity": {
            "images": 200,
            "candidates": 60,
            "seconds": 51.0,
            "all_integer": {"kl": 0.027, "agreement": 0.94},
            "ranked": [
                {
                    "op": "block_3_depthwise",
                    "type": "DEPTHWISE_CONV_2D",
                    "kl": 0.02,
                    "agreement": 0.95,
                    "kl_reduction": 0.007,
                },
                {"op": "Conv1", "type": "CONV_2D", "kl": 0.025, "agreement": 0.94, "kl_reduction": 0.002},
            ],
        },
    },
    {"attempt": 3, "recipe": "quantization-aware fine-tuning", "skipped": "export.qat.epochs is 0"},
]
FINE_TUNED = {
    "attempt": 6,
    "recipe": "quantization-aware fine-tuning (3 epochs on 400 training images, int8 simulated), "
    "then the TFLite converter",
    "top1": 0.82,
    "drop_pp": 1.0,
    "seconds": 95.0,
    "qat": {
        "epochs": 3,
        "epochs_completed": 2,
        "training_images": 400,
        "training_seconds": 61.2,
        "seconds": 80.4,
        "stopped_at_time_limit": True,
        "validation": {"images": 200, "fp32_top1": 0.83, "fake_quant_top1_before": 0.6, "fake_quant_top1_after": 0.81},
    },
}
RESULTS = {
    "schema": SCHEMA,
    "created": "now",
    "edgepipe": "0",
    "reference_format": "keras-fp32",
    "device": {"cpu_model": "Test CPU", "hostname": "box"},
    "conditions": {"threads": 1},
    "records": [
        {
            "artifact": "m.keras",
            "format": "keras-fp32",
            "precision": "fp32",
            "status": "ok",
            "top1": 0.83,
            "engine": "tensorflow",
            "device": "cpu",
            "threads": 1,
            "batch_size": 1,
            "latency_ms": {"p50": 2.0, "p90": 2.1, "p99": 2.2, "images_per_s": 500},
        },
        {
            "artifact": "m-tflite-int8.tflite",
            "format": "tflite-int8",
            "precision": "int8",
            "status": "ok",
            "top1": 0.82,
            "engine": "litert",
            "device": "cpu",
            "threads": 1,
            "batch_size": 1,
            "latency_ms": {"p50": 1.0, "p90": 1.1, "p99": 1.2, "images_per_s": 1000},
            "int8_budget": {
                "budget_pp": 1.0,
                "met": True,
                "chosen_attempt": 2,
                "attempts": ATTEMPTS,
                "kept_higher_precision": ["block_3_depthwise"],
                "validation_images": 200,
                "significance": {
                    "images": 200,
                    "lost": 2,
                    "gained": 2,
                    "top1_difference_pp": 0.0,
                    "interval_95_pp": [-1.5, 1.5],
                    "mcnemar_p": 1.0,
                    "alpha": 0.05,
                    "distinguishable": False,
                    "recall_change_pp": {},
                },
            },
            "significance": {
                "images": 300,
                "lost": 4,
                "gained": 1,
                "top1_difference_pp": -1.0,
                "interval_95_pp": [-2.3, 0.3],
                "mcnemar_p": 0.375,
                "alpha": 0.05,
                "distinguishable": False,
                "recall_change_pp": {"cat": -2.0},
            },
        },
    ],
}


def test_the_report_shows_recipes_layers_kept_and_their_effect():
    text = render(Results.from_dict(RESULTS))
    assert "attempt 1: TFLite converter, min/max (12.5 s): top-1 80.00%, +3.00 pp below FP32; 5 lost, 2 gained" in text
    assert "kept in higher precision: `block_3_depthwise`" in text
    assert "most sensitive layers by measured effect (60 candidates on 200 validation images" in text
    assert (
        "`block_3_depthwise` (DEPTHWISE_CONV_2D): in higher precision alone, KL 0.0200 (-0.0070), agreement 95.0%"
        in text
    )
    assert "on the validation split: 2 image(s) lost and 2 gained of 200" in text
    assert "## Against the FP32 model, image by image" in text
    assert "`tflite-int8`: 4 image(s) lost and 1 gained of 300 (-1.00 pp" in text and "not distinguishable" in text


def test_the_report_says_which_recipe_was_not_tried_and_what_fine_tuning_cost():
    from edgepipe.report.markdown import qat_lines

    text = render(Results.from_dict(RESULTS))
    assert "attempt 3 (quantization-aware fine-tuning): not tried: export.qat.epochs is 0" in text
    assert qat_lines(FINE_TUNED) == [
        "    - quantization-aware fine-tuning: 2 of 3 epoch(s) on 400 training images, 61 s of training (80 s in all), "
        "stopped at export.qat.max_seconds; simulated int8 top-1 60.00% before, 81.00% after (FP32 83.00%)"
    ]
