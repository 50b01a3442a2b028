"""The shared ground every other part stands on: errors and exit statuses, the console, the
quiet TensorFlow import and files written atomically. Imports nothing else of mnist_lab."""
