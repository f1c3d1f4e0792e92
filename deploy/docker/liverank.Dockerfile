# The liverank image: the stream workers, the trainer and the scorer all run from it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY features features
COPY streams streams
COPY snapshots snapshots
COPY trainer trainer
COPY scorer scorer
COPY liverank liverank
COPY deploy deploy
RUN pip install --no-cache-dir .
ENV LIVERANK_HOME=/data
VOLUME /data
CMD ["liverank", "--help"]
