#!/usr/bin/env bash
# Fallback for distributions without the Debian package `dataset-fashion-mnist`: fetch the four IDX files
# from the dataset's public mirror into the same folder the package uses.
set -euo pipefail
d=/usr/share/datasets/fashion-mnist; sudo mkdir -p $d
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  sudo curl -fsSL -o $d/$f.gz "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/$f.gz"
done
