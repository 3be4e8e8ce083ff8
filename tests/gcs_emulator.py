"""A local Cloud Storage for the gs:// tests and benchmarks: gcp-storage-emulator (from PyPI), in
memory, with one fix: object downloads carry the x-goog-generation header, as Cloud Storage's do.
TensorStore reads an object's generation from that header to rewrite it conditionally (OCDBT's
manifest, when a checkpoint commits in more than one batch); without it an Orbax save fails at
random with "Malformed StorageGeneration".

  python tests/gcs_emulator.py [--port=0] [--bucket=NAME]...

prints "ready PORT" once it serves (port 0: a free one) and serves until killed. Point the
clients at it with STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT (bigmodel_jax/storage.py).
"""

import argparse
import logging
import threading

from gcp_storage_emulator import server
from gcp_storage_emulator.handlers import buckets, objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  try:
    obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
  except Exception:  # noqa: BLE001 (not found: the 404 stands)
    return
  response["x-goog-generation"] = str(obj["generation"])
  response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--bucket", action="append", default=[])
  args = parser.parse_args()
  logging.disable(logging.CRITICAL)  # one line per request otherwise
  objects.download = _download_with_generation  # objects.get (?alt=media) calls it by name
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      if handler is _download:
        methods[method] = _download_with_generation
  emulator = server.create_server("127.0.0.1", args.port, in_memory=True)
  for name in args.bucket:
    buckets.create_bucket(name, emulator._storage)
  emulator.start()
  print(f"ready {emulator._api._httpd.server_address[1]}", flush=True)
  threading.Event().wait()  # the server runs in its own thread


if __name__ == "__main__":
  main()
