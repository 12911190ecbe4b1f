"Batched augmentation against torchvision's functional ops, image by image, with the same parameters."
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from deepcluster_nb.augment import (AugmentConfig, BatchAugment, adjust_brightness, adjust_contrast, adjust_hue,
                                    adjust_saturation, apply_color_jitter, apply_grayscale, color_jitter_params,
                                    gaussian_blur, random_resized_crop_params, replay_per_image, resized_crop, to_float)

TV_JITTER = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def images(n, h, w, seed=0, c=3):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("h,w,size", [(32, 32, 32), (32, 32, 224), (28, 36, 20), (96, 96, 64), (224, 200, 224)])
def test_crop_and_flip_match_torchvision(h, w, size):
    n = 12
    x = images(n, h, w)
    boxes = random_resized_crop_params(n, h, w, generator=torch.Generator().manual_seed(1))
    flip = torch.arange(n) % 3 == 0
    ours = resized_crop(x, boxes, size, flip)
    for i in range(n):
        t, l, bh, bw = boxes[i].int().tolist()
        ref = TF.resized_crop(x[i], t, l, bh, bw, [size, size], antialias=False)
        if flip[i]: ref = TF.horizontal_flip(ref)
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_crop_boxes_valid_and_spread():
    b = random_resized_crop_params(2000, 32, 40, generator=torch.Generator().manual_seed(0))
    top, left, h, w = b.unbind(1)
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 40).all()
    frac = h * w / (32 * 40)
    assert frac.min() < 0.12 and frac.max() > 0.9, "area fractions should span the (0.08, 1) range"
    assert len(set(map(tuple, b.tolist()))) > 1000, "boxes are drawn per image"


@pytest.mark.parametrize("k,ours,factors", [
    (0, adjust_brightness, [0.2, 0.7, 1.0, 1.4, 1.8, 0.5]),
    (1, adjust_contrast, [0.2, 0.7, 1.0, 1.4, 1.8, 0.5]),
    (2, adjust_saturation, [0.2, 0.7, 1.0, 1.4, 1.8, 0.5]),
    (3, adjust_hue, [-0.5, -0.3, 0.0, 0.1, 0.25, 0.5]),
])
def test_each_colour_op_matches_torchvision(k, ours, factors):
    x = images(6, 11, 13, seed=k)
    x[0] = x[0].mean(0, keepdim=True)          # a grey image
    x[1, 0] = x[1, 1]                           # a tie for the maximum channel
    f = torch.tensor(factors)
    y = ours(x, f)
    for i in range(6):
        torch.testing.assert_close(y[i], TV_JITTER[k](x[i], float(f[i])), atol=1e-5, rtol=0)


def test_hue_on_many_random_pixels():
    x = images(256, 8, 8, seed=3)
    f = torch.rand(256, generator=torch.Generator().manual_seed(4)) - 0.5
    y = adjust_hue(x, f)
    for i in range(256):
        torch.testing.assert_close(y[i], TF.adjust_hue(x[i], float(f[i])), atol=1e-5, rtol=0)


def test_jitter_per_image_order_matches_torchvision_chain():
    n = 48
    x = images(n, 10, 10, seed=5)
    p = color_jitter_params(n, 0.8, 0.8, 0.8, 0.2, p=0.8, generator=torch.Generator().manual_seed(6))
    y = apply_color_jitter(x, **p)
    for i in range(n):
        ref = x[i]
        if p["apply"][i]:
            for k in p["order"][i].tolist(): ref = TV_JITTER[k](ref, float(p["factors"][i, k]))
        torch.testing.assert_close(y[i], ref, atol=2e-5, rtol=0)
    assert len(set(map(tuple, p["order"].tolist()))) > 10, "each image draws its own order"
    assert (~p["apply"]).any() and p["apply"].any()


def test_jitter_does_not_modify_its_input():
    x = images(8, 6, 6)
    x0 = x.clone()
    apply_color_jitter(x, **color_jitter_params(8, 0.5, 0.5, 0.5, 0.1))
    assert torch.equal(x, x0)


def test_grayscale_matches_torchvision():
    x = images(7, 9, 9)
    on = torch.tensor([True, False, True, True, False, False, True])
    y = apply_grayscale(x, on)
    for i in range(7):
        ref = TF.rgb_to_grayscale(x[i], num_output_channels=3) if on[i] else x[i]
        torch.testing.assert_close(y[i], ref, atol=1e-6, rtol=0)


def test_blur_per_image_sigma_matches_torchvision():
    x = images(4, 30, 30)
    sigma = torch.tensor([0.1, 0.8, 2.0, 0.0])
    y = gaussian_blur(x, 23, sigma)
    for i in range(3):
        torch.testing.assert_close(y[i], TF.gaussian_blur(x[i], [23, 23], [float(sigma[i])] * 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(y[3], x[3])


@pytest.mark.parametrize("cfg", [AugmentConfig(size=32), AugmentConfig(size=24, jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5, blur_kernel=9)])
def test_module_matches_per_image_replay(cfg):
    n = 32
    aug = BatchAugment(cfg, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    x = (images(n, 32, 32, seed=7) * 255).to(torch.uint8)
    p = aug.sample_params(n, 32, 32, torch.Generator().manual_seed(8))
    ref = (replay_per_image(x, p, cfg) - aug.mean) / aug.std
    torch.testing.assert_close(aug.apply(x, p), ref, atol=2e-5 / 0.2, rtol=0)


def test_parameters_differ_across_images_and_views():
    n = 64
    aug = BatchAugment(AugmentConfig(size=32), mean=[0.5] * 3, std=[0.25] * 3)
    g = torch.Generator().manual_seed(9)
    a, b = aug.sample_params(n, 32, 32, g), aug.sample_params(n, 32, 32, g)
    for p in (a, b):
        assert len(set(map(tuple, p["boxes"].tolist()))) > n * 0.9
        assert len(set(p["jitter_factors"][:, 0].tolist())) == n
        assert 0 < p["flip"].sum() < n
    assert (a["boxes"] != b["boxes"]).any(1).float().mean() > 0.9, "the two views draw their own crops"
    assert (a["jitter_factors"] != b["jitter_factors"]).all()
    assert (a["jitter_order"] != b["jitter_order"]).any(1).float().mean() > 0.8


def test_views_of_copies_differ():
    aug = BatchAugment(AugmentConfig(size=24), mean=[0.5] * 3, std=[0.25] * 3)
    x = (images(1, 32, 32) * 255).to(torch.uint8).expand(8, 3, 32, 32)
    v1, v2 = aug(x), aug(x)
    assert all(not torch.allclose(v1[i], v1[j]) for i in range(8) for j in range(i + 1, 8))
    assert all(not torch.allclose(v1[i], v2[i]) for i in range(8))


def test_seeded_generator_reproduces_views():
    aug = BatchAugment(AugmentConfig(size=16, blur_p=0.5), mean=[0.5] * 3, std=[0.25] * 3)
    x = (images(10, 20, 20) * 255).to(torch.uint8)
    assert torch.equal(aug(x, torch.Generator().manual_seed(3)), aug(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(aug(x, torch.Generator().manual_seed(3)), aug(x, torch.Generator().manual_seed(4)))


PIL_REFERENCE = {"cc_pil_transform", "PILViews"}   # the per-image yardstick in `augment_kernels`, not a kernel


def test_augment_reexports_the_kernels():
    "The kernels live in `augment_kernels`; `augment` re-exports the very same objects, also through `import *`."
    import deepcluster_nb.augment as aug
    import deepcluster_nb.augment_kernels as kernels
    names = [n for n in kernels.__all__ if n not in PIL_REFERENCE]
    for name in names + ["_draw_device", "_axis_weights", "_gray", "_col"]:
        assert getattr(aug, name) is getattr(kernels, name), name
    assert set(names) <= set(aug.__all__) and PIL_REFERENCE <= set(kernels.__all__)
    assert {"AugmentConfig", "cc_recipe", "BatchAugment", "replay_per_image"} <= set(aug.__all__)


def test_call_is_apply_of_sample_params_from_the_same_generator():
    aug = BatchAugment(AugmentConfig(size=16, blur_p=0.5, blur_kernel=5), mean=[0.5] * 3, std=[0.25] * 3)
    x = (images(12, 20, 24, seed=10) * 255).to(torch.uint8)
    p = aug.sample_params(12, 20, 24, torch.Generator().manual_seed(11))
    assert torch.equal(aug(x, torch.Generator().manual_seed(11)), aug.apply(x, p))


def test_digits_views_warp_and_never_flip():
    from deepcluster_nb.augment import cc_recipe, random_affine
    x = (images(6, 8, 8, seed=12, c=1) * 255).to(torch.uint8)
    aug = BatchAugment(cc_recipe("digits", 12), mean=[0.5], std=[0.25])
    v = aug(x, torch.Generator().manual_seed(13))
    assert v.shape == (6, 1, 12, 12) and torch.equal(v, aug(x, torch.Generator().manual_seed(13)))
    still = BatchAugment(AugmentConfig(kind="digits", size=8, degrees=0., affine_scale=(1, 1), translate=0., noise=0.,
                                       thickness=0., elastic=0.), [0.5], [0.25])
    torch.testing.assert_close(still(x), still.eval_view(x), atol=1e-5, rtol=0)
    xf = to_float(x)
    torch.testing.assert_close(random_affine(xf, degrees=0., scale=(1, 1), translate=0.), xf, atol=1e-5, rtol=0)


def test_digits_views_vary_the_stroke_width():
    "With only the width on, copies of one digit get different amounts of ink, thicker and thinner than the original."
    from deepcluster_nb.augment import random_thickness, random_elastic
    x = torch.zeros(1, 1, 16, 16); x[..., 3:13, 7:9] = 1.0                     # a 2-px vertical stroke: a "1"
    only_width = AugmentConfig(kind="digits", size=16, degrees=0., affine_scale=(1, 1), translate=0., noise=0., elastic=0.)
    v = BatchAugment(only_width, [0.], [1.])((x * 255).to(torch.uint8).expand(32, 1, 16, 16), torch.Generator().manual_seed(0))
    ink = v.sum((1, 2, 3))
    assert ink.max() > x.sum() * 1.5 and ink.min() < x.sum() * 0.75, ink      # dilation widens the 2-px stroke to 4 px, erosion erases it
    assert len(set(ink.round(decimals=3).tolist())) > 20, "each view its own width"
    torch.testing.assert_close(random_thickness(x, 0.), x)
    y = random_elastic(x.expand(4, 1, 16, 16), 0.08, generator=torch.Generator().manual_seed(1))
    assert y.shape == (4, 1, 16, 16) and not torch.allclose(y[0], y[1]) and (y.sum((1, 2, 3)) > 0.5 * x.sum()).all()


def test_pil_reference_agrees_with_the_module_where_the_draws_do_not_matter():
    "The per-image PIL pipeline (the benchmark's reference loop uses it) against the batched module: nothing random, grey only, flip only."
    from dataclasses import replace
    from PIL import Image
    from deepcluster_nb.augment_kernels import cc_pil_transform
    x = (images(8, 32, 32, seed=14) * 255).to(torch.uint8)
    imgs = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in x]
    pil = lambda cfg: torch.stack([cc_pil_transform(cfg)(im) for im in imgs])
    ours = lambda cfg: BatchAugment(cfg, [0.] * 3, [1.] * 3)(x)
    still = AugmentConfig(size=32, crop_scale=(1., 1.), hflip=False, jitter_p=0., gray_p=0.)
    assert torch.equal(pil(still), to_float(x)) and torch.equal(ours(still), to_float(x))
    grey = replace(still, gray_p=1.)
    torch.testing.assert_close(pil(grey), ours(grey), atol=0.6 / 255, rtol=0)   # PIL rounds the grey level to an integer
    torch.manual_seed(0)
    flips = torch.stack([cc_pil_transform(replace(still, hflip=True))(imgs[0]) for _ in range(32)])
    same, mirrored = (flips == to_float(x[0])).flatten(1).all(1), (flips == to_float(x[0]).flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 0 < same.sum() < 32


def test_pil_reference_and_module_turn_the_same_share_of_views_grey():
    "The full default recipe: both pipelines make about gray_p = 0.2 of the views grey (three equal channels)."
    from PIL import Image
    from deepcluster_nb.augment_kernels import cc_pil_transform
    cfg, n = AugmentConfig(size=32), 400
    x = (images(n, 32, 32, seed=15) * 255).to(torch.uint8)
    is_grey = lambda v: ((v[:, 0] == v[:, 1]) & (v[:, 1] == v[:, 2])).flatten(1).all(1).float().mean().item()
    torch.manual_seed(1)
    pil = torch.stack([cc_pil_transform(cfg)(Image.fromarray(a.permute(1, 2, 0).numpy())) for a in x])
    ours = BatchAugment(cfg, [0.] * 3, [1.] * 3)(x, torch.Generator().manual_seed(2))
    for share in (is_grey(pil), is_grey(ours)): assert 0.12 < share < 0.28, share
