"""Reading and writing media and files: atomic outputs, images, video, local paths and object storage."""
