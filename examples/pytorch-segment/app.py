"""A small PyTorch segmentation-like model for initless (see examples/README.md, "Frameworks").

At init a conv net is built with random weights from a fixed seed (no downloads), so every instance,
booted or restored, holds the same model and answers the same input with the same mask. Its size is a
setting: MODEL_MB (parameter bytes, in MiB) sets the width of its low-resolution middle layers, where
almost all parameters are. IMAGE_SIZE is the side of the square input image.

  GET  /                    segment the synthetic image of seed 0 (also the snapshot's warmup)
  GET  /segment?seed=N      segment a synthetic image made from seed N
  POST /segment             segment the binary PPM (P6, IMAGE_SIZE x IMAGE_SIZE) in the body
Each answers JSON: the mask's foreground pixel count and SHA-256, and the request counter.
"""
import hashlib
import json
import math
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import torch
from torch import nn

READY = "pytorch-segment: ready"
MODEL_MB = float(os.environ.get("MODEL_MB", "8"))
IMAGE_SIZE = int(os.environ.get("IMAGE_SIZE", "64"))
MIDDLE_LAYERS = 2


class SegmentNet(nn.Module):
    """An encoder (3 stride-2 convs down to 1/8 resolution), a wide middle, a decoder back to full
    resolution with a skip connection, and a 1x1 conv to one mask channel."""

    def __init__(self, width):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, width, 3, stride=2, padding=1), nn.ReLU())
        self.middle = nn.Sequential(*[m for _ in range(MIDDLE_LAYERS)
                                      for m in (nn.Conv2d(width, width, 3, padding=1), nn.ReLU())])
        self.up = nn.Sequential(nn.Upsample(scale_factor=8, mode="nearest"), nn.Conv2d(width, 16, 1), nn.ReLU())
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x):
        skip = self.stem(x)
        return self.head(self.up(self.middle(self.down(skip))) + skip)


def middle_width(model_mb):
    """The width whose middle layers hold about model_mb MiB of float32 weights."""
    return max(8, int(math.sqrt(model_mb * 2**20 / 4 / (MIDDLE_LAYERS * 9))))


def synthetic_image(seed):
    """A noisy background with a few bright discs: something with a foreground to segment."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, IMAGE_SIZE, IMAGE_SIZE, generator=g) * 0.3
    ys, xs = torch.meshgrid(torch.arange(IMAGE_SIZE), torch.arange(IMAGE_SIZE), indexing="ij")
    for _ in range(3):
        cy, cx = (torch.rand(2, generator=g) * IMAGE_SIZE).tolist()
        r = float(torch.rand(1, generator=g)) * IMAGE_SIZE / 4 + 2
        disc = ((ys - cy) ** 2 + (xs - cx) ** 2) <= r * r
        img[:, disc] = torch.rand(3, 1, generator=g) * 0.5 + 0.5
    return img


def image_from_ppm(data):
    """A binary PPM (P6, maxval 255) of IMAGE_SIZE x IMAGE_SIZE as a 3 x H x W float tensor in [0, 1]."""
    fields, pos = [], 0
    while len(fields) < 4:  # magic, width, height, maxval, separated by whitespace (no comments)
        while data[pos:pos + 1].isspace():
            pos += 1
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    magic, w, h, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255 or (w, h) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"want a P6 PPM of {IMAGE_SIZE}x{IMAGE_SIZE}, maxval 255")
    pixels = data[pos + 1:pos + 1 + w * h * 3]
    if len(pixels) != w * h * 3:
        raise ValueError("PPM pixel data is short")
    return torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1).float() / 255


class Model:
    def __init__(self):
        torch.manual_seed(0)
        self.net = SegmentNet(middle_width(MODEL_MB)).eval()
        self.parameter_bytes = sum(p.numel() * p.element_size() for p in self.net.parameters())
        self.requests = 0

    @torch.inference_mode()
    def segment(self, image):
        self.requests += 1
        logits = self.net(image.unsqueeze(0))[0, 0]
        # Untrained weights put every logit on one side of 0: threshold at the image's mean instead.
        mask = (logits > logits.mean()).to(torch.uint8)
        return {"foreground": int(mask.sum()), "mask_sha256": hashlib.sha256(mask.numpy().tobytes()).hexdigest(),
                "size": IMAGE_SIZE, "parameter_bytes": self.parameter_bytes, "requests": self.requests}


class Handler(BaseHTTPRequestHandler):
    model = None  # set in main()

    def answer(self, status, obj):
        body = (json.dumps(obj, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path not in ("/", "/segment"):
            return self.answer(404, {"error": "not found"})
        seed = int(parse_qs(url.query).get("seed", ["0"])[0])
        started = time.monotonic()
        result = self.model.segment(synthetic_image(seed))
        result["seed"], result["inference_ms"] = seed, round((time.monotonic() - started) * 1000, 2)
        self.answer(200, result)

    def do_POST(self):
        if urlparse(self.path).path != "/segment":
            return self.answer(404, {"error": "not found"})
        try:
            image = image_from_ppm(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        except (ValueError, IndexError) as e:
            return self.answer(400, {"error": str(e)})
        self.answer(200, self.model.segment(image))

    def log_message(self, format, *args):  # no access log on stderr
        pass


def main():
    # Intra-op threads (OpenMP); TORCH_THREADS in function.toml, default one per core of the sandbox.
    if "TORCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["TORCH_THREADS"]))
    Handler.model = Model()
    port = int(os.environ.get("PORT", "9000"))
    # HTTP/1.0 and Connection: close: no connection is open at the snapshot.
    server = HTTPServer(("0.0.0.0", port), Handler)
    print(READY, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
