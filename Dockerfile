# otrain in a container: the otrain-* commands and the library, TensorFlow on the CPU.
#
#   docker build -t otrain .
#   docker run --name otrain -dit -v /path_to_your_data/:/home/newuser/data/ otrain
#   docker exec otrain otrain-train -h
#   docker exec otrain otrain-convert --path datacube_test --cube cube --cutouts candidates_training
#
# Commands run as the unprivileged user `newuser`, in /home/newuser/data, the folder
# where your data are mounted: relative paths are relative to your data folder, and
# outputs land there. Files are written with user ID 1000; to own them as yourself,
# build with your ID: docker build --build-arg UID=$(id -u) -t otrain .
# docs/getting_started.md explains it step by step.

FROM python:3.11-slim

ARG UID=1000

# No bytecode files, unbuffered output (docker logs shows progress lines at once),
# no pip cache in the image; quiet TensorFlow start-up; figures without a display.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TF_CPP_MIN_LOG_LEVEL=3 \
    MPLBACKEND=Agg

RUN useradd --create-home --uid "${UID}" --shell /bin/bash newuser

# Only what the package build needs (see .dockerignore), installed system-wide as
# root, then removed: the image keeps the installed package, not the sources.
COPY pyproject.toml README.md /tmp/otrain/
COPY otrain /tmp/otrain/otrain
RUN pip install /tmp/otrain \
    && rm -rf /tmp/otrain \
    && otrain-train --version

USER newuser
RUN mkdir -p /home/newuser/data
WORKDIR /home/newuser/data

# A shell keeps the container alive in the background (docker run -dit); commands
# are run in it with docker exec.
CMD ["bash"]
