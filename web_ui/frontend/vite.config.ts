import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The build lands in a Django static directory; Django's /app/ view reads the
// manifest to find the hashed file names, so browsers never run a stale bundle.
export default defineConfig({
  plugins: [react()],
  base: "/static/web_ui/app/",
  build: {
    outDir: "../static/web_ui/app",
    emptyOutDir: true,
    manifest: "manifest.json",
    // One bundle (CodeMirror, xyflow, dagre) of about 1 MB, 300 kB gzipped: fine for an IDE.
    chunkSizeWarningLimit: 1200,
    rollupOptions: { input: "src/main.tsx" },
  },
});
