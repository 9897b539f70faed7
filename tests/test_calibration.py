import numpy as np

from edgepipe import calibration


def test_draw_is_stratified_seeded_and_digested():
    labels = np.repeat(np.arange(4), 50)
    images = np.arange(200, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    a = calibration.draw(images, labels, 40, seed=1)
    b = calibration.draw(images, labels, 40, seed=1)
    c = calibration.draw(images, labels, 40, seed=2)
    assert np.bincount(a.labels).tolist() == [10, 10, 10, 10]
    assert a.digest == b.digest and a.digest != c.digest
    feeds = list(a.batches("image", batch_size=16))
    assert [f["image"].shape[0] for f in feeds] == [16, 16, 8] and feeds[0]["image"].dtype == np.float32


def test_draw_caps_at_available_images():
    labels = np.array([0, 0, 1])
    images = np.zeros((3, 2, 2, 1), np.uint8)
    assert len(calibration.draw(images, labels, 100, seed=0)) == 3
