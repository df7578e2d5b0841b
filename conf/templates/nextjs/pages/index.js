// The app's one page: edit it in the sandbox (`wrenn files put`) and the
// dev server's Fast Refresh updates the browser in place.
import { useState } from 'react';

export default function Home() {
  const [clicks, setClicks] = useState(0);
  return (
    <main>
      <h1 id="greeting">Hello from wrenn, version 1</h1>
      <button id="counter" onClick={() => setClicks(clicks + 1)}>
        clicked {clicks} times
      </button>
    </main>
  );
}
