"""Convert timm / JAX .npz / mmpretrain ViT weights into an ovkit checkpoint."""
from ovkit.vit.convert import main

if __name__ == '__main__':
    main()
