// Camera capture where the browser allows it (getUserMedia needs a secure context: https or
// localhost). Where it does not, the camera controls stay hidden.

export function camera({ box, start, video, controls, shoot, stop }, onPicture, onError) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
  box.hidden = false;
  let stream = null;

  function close() {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
    video.hidden = controls.hidden = true;
    start.hidden = false;
  }

  start.addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "environment" },
        audio: false,
      });
    } catch (err) {
      onError(err && err.name === "NotAllowedError"
        ? "Camera access was refused. Allow it in the browser, or pick a file instead."
        : "No camera is available here. Pick a file or draw instead.");
      return;
    }
    video.srcObject = stream;
    await video.play();
    video.hidden = controls.hidden = false;
    start.hidden = true;
    shoot.focus();
  });

  shoot.addEventListener("click", () => {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => onPicture(new File([blob], "camera.jpg", { type: "image/jpeg" })), "image/jpeg", 0.92);
  });

  stop.addEventListener("click", close);
}
