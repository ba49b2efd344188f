"""A naive synchronous UploadAndRun server: what row (2) of the benchmark is weighed against.

The same contract and the same pipeline engine, built the simplest way: the handler writes
the upload to a temp file, then decodes it with OpenCV in its own thread, runs the pipeline
on each frame (no time limit, one frame at a time) and sends the result, one step after the
other. Nothing is overlapped beyond what FFmpeg's own threads do, and nothing protects the
server from a decoder crash or hang. Run as a script; prints 'listening on 127.0.0.1:PORT'.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from concurrent import futures

import cv2
import grpc
from bench_serving import serve_on_loopback

from videodag.v1 import run_pb2, video_pipeline_service_pb2, video_pipeline_service_pb2_grpc
from videodag_service import convert
from videodag_service.dag import DagPipelineService

Response = video_pipeline_service_pb2.UploadAndRunResponse


class NaiveServicer(video_pipeline_service_pb2_grpc.VideoPipelineServiceServicer):
    def __init__(self) -> None:
        self._dag = DagPipelineService.from_folder()
        self._dag.frame_workers = 1

    def UploadAndRun(
        self, requests: Iterator[video_pipeline_service_pb2.UploadAndRunRequest], context: grpc.ServicerContext
    ) -> Iterator[Response]:
        config = next(requests).config
        with tempfile.NamedTemporaryFile(suffix=".mp4") as upload:
            size = 0
            for request in requests:
                upload.write(request.chunk)
                size += len(request.chunk)
            upload.flush()
            yield Response(upload_received=run_pb2.UploadReceived(size_bytes=size))
            capture = cv2.VideoCapture(upload.name, cv2.CAP_FFMPEG)
            fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
            yield Response(video_info=run_pb2.VideoInfo(fps=fps))
            frames = 0
            with self._dag.open_run(config.pipeline_id) as run:
                while not config.options.max_frames or frames < config.options.max_frames:
                    ok, image = capture.read()
                    if not ok:
                        break
                    result = run.process({"frame_index": frames, "timestamp": frames / fps, "image": image})
                    yield convert.frame_event(frames, frames / fps, result)
                    frames += 1
            capture.release()
        yield Response(summary=run_pb2.RunSummary(pipeline_id=config.pipeline_id, frames_processed=frames))


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)])
    video_pipeline_service_pb2_grpc.add_VideoPipelineServiceServicer_to_server(NaiveServicer(), server)
    serve_on_loopback(server, "naive server")


if __name__ == "__main__":
    main()
