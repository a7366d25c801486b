# The LangSmith stand-in (lswh/standin) as its own image for the compose test: built FROM the
# project image, which carries the stand-in today (issue 17 moves it into a package of its own;
# then this installs that package instead).
ARG LSWH_IMAGE
FROM ${LSWH_IMAGE}
EXPOSE 1984
CMD ["python", "-m", "lswh.standin", "--host", "0.0.0.0", "--port", "1984", "--preload-fixture", "--no-limits"]
