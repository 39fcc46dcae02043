"""The router: places each image on the node whose cache most likely holds its feature."""
