"""Images: rootfs tarballs, the demo image, later the registry client."""
