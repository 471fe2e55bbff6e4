"""Data: image readers, dataset layouts (class folders, YOLO), splits, duplicates, synthetic boards."""
