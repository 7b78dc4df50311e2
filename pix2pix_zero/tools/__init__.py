"""Around the method: images and files, folders of inputs and their outputs, heat maps of attention."""
