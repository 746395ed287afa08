"""The lab guest image, built offline from Debian packages."""

from ucnb.image.build import GuestImage, build_image

__all__ = ["GuestImage", "build_image"]
