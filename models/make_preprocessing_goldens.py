"""Writes what torchvision's transforms make of real photos (from scikit-image's sample data),
for the test that checks densert's preprocessing presets against them."""
import argparse
import json
import os

import numpy as np
import skimage.data
import torch
import torchvision.transforms.functional as TF
from PIL import Image

PHOTOS = ["astronaut", "coffee", "chelsea"]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CAFFE_MEAN_BGR = [103.94, 116.78, 123.68]


def shorter_side_center_crop(rgb_float_chw, size=256, crop=224):
    # Bilinear on float tensors without antialiasing: the resize densert reproduces.
    resized = TF.resize(rgb_float_chw, size, interpolation=TF.InterpolationMode.BILINEAR,
                        antialias=False)
    return TF.center_crop(resized, crop)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    manifest = []
    for name in PHOTOS:
        rgb = getattr(skimage.data, name)()[:, :, :3]
        png = os.path.join(args.out, f"photo_{name}.png")
        Image.fromarray(rgb).save(png)
        pixels = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()

        imagenet = shorter_side_center_crop(pixels / 255.0)
        imagenet = TF.normalize(imagenet, IMAGENET_MEAN, IMAGENET_STD)
        np.save(os.path.join(args.out, f"photo_{name}.imagenet.npy"), imagenet.unsqueeze(0).numpy())

        bgr = pixels[[2, 1, 0]]
        caffe = shorter_side_center_crop(bgr)
        caffe = (caffe - torch.tensor(CAFFE_MEAN_BGR).view(3, 1, 1)) * 0.017
        np.save(os.path.join(args.out, f"photo_{name}.caffe.npy"), caffe.unsqueeze(0).numpy())

        # What PIL's antialiased resize gives, to state how far densert is from it.
        pil = TF.center_crop(TF.resize(Image.fromarray(rgb), 256), 224)
        pil = TF.normalize(TF.to_tensor(pil), IMAGENET_MEAN, IMAGENET_STD)
        np.save(os.path.join(args.out, f"photo_{name}.imagenet_pil.npy"), pil.unsqueeze(0).numpy())
        manifest.append(name)
        print(f"wrote  photo_{name}: {rgb.shape[1]}x{rgb.shape[0]}")
    with open(os.path.join(args.out, "photos.json"), "w") as f:
        json.dump(manifest, f)


if __name__ == "__main__":
    main()
